"""Training and evaluation of spatial VLMs on synthetic scenes (imports torch; not used by the nodes)."""
