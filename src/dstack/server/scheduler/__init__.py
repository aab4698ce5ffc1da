"""Scheduling: which runner can take which job (`matching`) and the loop (`loop`)."""
