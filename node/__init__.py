"""budgetnode: agents that act only within a budget the whole network can verify."""
