"""The vault format: keys, encryption, chunking, packs, indexes, trees, snapshots."""
