"""GPU step costs of the model shapes the production configs name, measured once on a GPU."""
