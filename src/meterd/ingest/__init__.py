"""Between the API and storage: every write of events goes through here.

``writes`` holds the units of work (a batch of events, a cancellation) that run inside one
store transaction; ``pipeline`` batches requests so that many commit with one fsync.
"""
