"""What the master does: its fleet of workers, one worker's connection, and its side of integrity and agent info."""
