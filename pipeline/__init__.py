"""The experiment pipeline around the NumPy MLP: one command per DVC stage
(``python -m pipeline.<stage>``), and the packages they share (see the README's "Layout")."""
