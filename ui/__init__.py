"""The Streamlit side every page shares: the frame (who is signed in, the current project, errors), the browser
helpers (session cookie, live hints, the score sheet) and job notices. Pages and app.py import it; core/ never does."""
