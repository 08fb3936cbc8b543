"""The corpus store: preprocessed, sharded int16 arrays plus a Parquet manifest."""
