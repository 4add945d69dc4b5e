"""The soak and fault suite: the whole platform under a batch of videos and injected faults."""
