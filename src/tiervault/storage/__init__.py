"""Storage backends: named files on a local disk, FTP(S), SFTP or S3, and wrappers."""
