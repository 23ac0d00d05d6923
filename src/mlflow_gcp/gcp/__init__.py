"""Reaching Google's APIs: the client factory, error translation, retries and operation waiting."""
