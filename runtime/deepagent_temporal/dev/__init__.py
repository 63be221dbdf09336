"""Development tooling shipped with the package: the scripted chat model, local Temporal
and Redis servers, a worker launcher and the demo. Product code never imports it."""
