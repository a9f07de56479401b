-- Runs an Argo CD health script the way Argo CD does: the live object in the global `obj`,
-- the script's return value is {status, message}.
-- usage: lua health_harness.lua <health.lua> <object.lua>   (object.lua returns the object table)
obj = dofile(arg[2])
local hs = dofile(arg[1])
io.write(tostring(hs.status), "\n", tostring(hs.message), "\n")
