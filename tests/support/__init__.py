"""Test support shared by every package's tests: free ports, real servers, tiny archives."""
