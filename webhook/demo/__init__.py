"""The built-in demo cluster of `kubefence demo`."""
