"""Neural building blocks shared by the modalities (context networks, prediction heads, norms)."""
