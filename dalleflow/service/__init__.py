"""The service's logic without Ray: the flow between stages, the HTTP routes, the image store.

deployments/ puts these behind Ray Serve; bench/ runs them in-process to
measure what Serve adds.
"""
