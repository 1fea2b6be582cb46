"""H.323 without I/O (TPKT, Q.931, H.225.0, H.245, RAS); filled by the H.323 issue."""
