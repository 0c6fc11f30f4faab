"""Hostile Pods for the test bed: real TCP servers on loopback that misbehave at the byte level."""
