"""Sample data for Cascade: invented companies to import (see README.md)."""
