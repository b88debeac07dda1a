"""What happens to a request: route, propose, validate, escalate, decide by policy, release or hold."""
