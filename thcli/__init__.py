"""th: thcli."""
