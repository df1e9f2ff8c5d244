"""Error metrics and figures shared by training and the workflows."""
