"""Server logic. Routers call these; these use the database and the blob store."""
