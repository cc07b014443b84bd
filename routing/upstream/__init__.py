"""The services behind the gateway: the pool that reaches them, which target gets a request,
what is known of each target's health, and the registry of instances that announce themselves."""
