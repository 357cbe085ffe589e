"""What a worker does: its link to the master, that connection, and its side of integrity and agent info."""
