"""Mining: the Open-i client, crash-safe SQLite state, polite downloads, the offline replay server,
compound-figure separation, curation and de-duplication (``glomssl mine``, ``separate``, ``curate``,
``dedup``)."""
