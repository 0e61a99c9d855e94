"""Li, Wei & Ma (2019)'s two-layer P/Q setting (Sections 2-5, Appendix F.1), simulated in batches."""
