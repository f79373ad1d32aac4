"""Raw archive: samples and power readings as they arrived, in Parquet, for replay."""
