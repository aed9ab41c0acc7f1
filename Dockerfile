# EnvNet Sound Lab as a Hugging Face Docker Space (README front matter: sdk: docker, app_port: 8501).
# The same two steps as the README's set-up: install requirements.txt, then `streamlit run serve.py`.
FROM python:3.11-slim

# Spaces run the container as user 1000; give it a home so that caches (torch, streamlit) are writable.
RUN useradd --create-home --uid 1000 user
USER user
# A Space is shown inside an iframe on huggingface.co, where Streamlit's default (SameSite=Lax) XSRF cookie is
# a third-party cookie the browser does not send, so uploads would fail with "403". XSRF protection stays on
# with the cookie marked SameSite=None (Streamlit then adds Secure; a Space is served over HTTPS).
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=true \
    STREAMLIT_SERVER_XSRF_COOKIE_SAME_SITE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    ENVNET_PUBLIC=1 \
    THP_MEM_ALLOC_ENABLE=1
WORKDIR /home/user/app

# Requirements first, so that a code change does not reinstall torch. The CPU index keeps the image small:
# PyPI's Linux torch wheel pulls in several GB of CUDA libraries that a CPU Space cannot use.
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY --chown=user . .

EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
CMD ["python", "-m", "streamlit", "run", "serve.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true"]
