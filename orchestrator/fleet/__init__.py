"""The nodes the controller knows: their connections, health and reported state."""
