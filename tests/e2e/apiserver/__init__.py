"""The scenarios against a real kube-apiserver (tests/e2e/run.sh runs tests/e2e/scenarios.py),
one module per topic; helpers.py holds the API client, the assertion and the shared fixtures."""
