"""Scheduling: the loop that judges waiting jobs (`loop`) and the deadlines it enforces
(`deadlines`). It calls the services (`services.matching` says which runner can take which
job, `services.claims` hands jobs out); the services never call it."""
