"""Built-in architectures, user factories and checkpoint loading (``compress.models.build``)."""
