"""The production topology on one machine (``mlsys stack``) and the one way to start, wait
for and stop a server process that everything else uses."""
