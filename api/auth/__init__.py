"""Users, password hashes, signed bearer tokens and the login rate limit."""
