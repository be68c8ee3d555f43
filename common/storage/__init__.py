"""Files on disk that must stay private or exclusive: private files, run locks."""
