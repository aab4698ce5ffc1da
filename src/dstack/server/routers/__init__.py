"""HTTP routers: parse, call one service, return a model. No logic here."""
