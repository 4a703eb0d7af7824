"""Ray Serve adapters: one deployment per stage, an ingress that composes them, and the app builder."""
