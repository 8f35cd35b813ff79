"""Captions as a textual view of the photos (CASLIE, Ling et al.): context-conditioned caption
prompts and targets (:mod:`ipl.caption.prompts`), caption quality evaluation by a vote of
independent judges (:mod:`ipl.caption.cqe`), and reciprocal rank fusion of image and caption
retrieval (:mod:`ipl.caption.fusion`)."""
