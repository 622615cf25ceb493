"""HoliTok training: discriminators, losses, the three progressive stages."""
