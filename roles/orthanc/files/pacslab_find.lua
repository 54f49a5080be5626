-- roles/orthanc: the DICOM audit trail's Query message (PS3.15 A.5.3.10) for each C-FIND request
-- Orthanc accepted. Orthanc 1.10.1 shows an incoming C-FIND to a Lua filter, not to a plugin: this
-- filter hands the query's keys (tag "gggg,eeee" -> value) and its origin (RemoteIp, RemoteAet,
-- CalledAet) to the Python plugin (pacslab_orthanc.py, POST /pacslab/audit/c-find, reached from
-- Orthanc itself only), which writes the message. The query goes on unchanged, whatever the audit
-- answered. ExecuteLuaEnabled stays false: no Lua is ever taken over REST.
function IncomingFindRequestFilter(query, origin)
  RestApiPost('/pacslab/audit/c-find', DumpJson({query = query, origin = origin}, true), false)
  return query
end
