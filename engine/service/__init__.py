"""The engine service: one long-lived process per data folder, serving HTTP on a Unix socket."""
