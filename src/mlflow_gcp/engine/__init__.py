"""The engine every step runs on: what a resource is (`base`) and the loop that reads, compares and applies it
(`loop`). It knows no step and no resource kind: steps and resources are built on it."""
