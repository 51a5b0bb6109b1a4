"""The notebook a run writes: the recorder and the redaction of secrets."""
