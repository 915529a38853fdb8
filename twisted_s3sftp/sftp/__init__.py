"""
SFTP over an object store: Conch's SFTP protocol made safe, the
C{ISFTPServer} operations, the open uploads, downloads and directories,
and the pure parts they stand on (paths, attributes, extensions, flow).
"""
