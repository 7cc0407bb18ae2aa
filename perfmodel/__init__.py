"""perfmodel: latency prediction for npusim's operators from their plans (in progress)."""
