"""Models: streamed multipart upload, validation, listing and deletion."""
