"""The Litestar REST API: public task endpoints and the internal progress endpoint."""
