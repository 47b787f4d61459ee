"""Prov-GigaPath embeddings: tile encoder, LongNet slide encoder, slide embedding, linear probes."""
