"""Phase 1, enrichment: the rules its stages share (names and domains, the region rule, the
waterfall's choices, the verifier's gate), kept apart from the handlers that apply them."""
