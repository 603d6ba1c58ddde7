"""What the controller and the edge-node agree on: desired state, its wire form, units and
discovery adverts. Both programs import this package; neither imports the other."""
