"""Tools that build data for the recipes (not used by training or extraction):
:mod:`.espeak` synthesises the embedded speech corpus with espeak-ng."""
