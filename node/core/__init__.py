"""The pure core: no sockets, no sleeps, no wall clock. Time arrives as an argument."""
