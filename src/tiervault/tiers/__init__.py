"""The tier set: one backend made of ordered tiers, applying SPEC §2-§6."""
