"""Receiving providers' webhooks: checking that a delivery is authentic before it is parsed."""
