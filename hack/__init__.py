"""Developer and CI tooling: the local real stack (`python -m hack.stack`). Not part of the product."""
